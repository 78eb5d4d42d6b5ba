//! Word count from Kafka to Kafka with the count per word in RocksDB keyed
//! state, exactly-once (the "hello world" of Kafka Streams and Flink).
//!
//! ```text
//! lines (Kafka) -> flat_map(split into words) -> key_by(word)
//!     -> aggregate(Count) in RocksDB -> (word, running count) -> word-counts (Kafka)
//! ```
//!
//! Run it on its own, with an embedded broker (librdkafka's in-process mock
//! cluster):
//!
//! ```sh
//! cargo run --example kafka_word_count
//! ```
//!
//! or against a real broker (the topics are created if missing):
//!
//! ```sh
//! cargo run --example kafka_word_count -- --brokers 127.0.0.1:9092 [--input lines --output word-counts]
//! ```
//!
//! It produces a few sample lines into the input topic, runs the job
//! **bounded** (it reads every partition up to the end offsets seen at start,
//! takes a final checkpoint and exits), then reads back what the run wrote to
//! the output topic with a read_committed consumer and prints each word's
//! final count.
//!
//! Against a real broker the sink is exactly-once: a checkpoint's output is
//! committed in one Kafka transaction when that checkpoint completes
//! (Flink's two-phase commit), so read_committed readers see every record
//! once, also across crashes. The mock cluster cannot host that sink (it
//! lacks the CreateTopics API the sink uses for its commit-marker topic, and
//! read_committed isolation), so the embedded run writes at-least-once: the
//! same output when nothing fails.

use anyhow::Context as _;
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use weir::connectors::kafka::{utf8, Delivery, KafkaSink, KafkaSource};
use weir::operators::aggregators::Count;
use weir::{JobBuilder, JobConfig};

#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers; without it an in-process mock cluster is started.
    #[arg(long)]
    brokers: Option<String>,
    /// Input topic (text lines).
    #[arg(long, default_value = "lines")]
    input: String,
    /// Output topic (key = word, value = running count).
    #[arg(long, default_value = "word-counts")]
    output: String,
    /// Keep checkpoints here (a rerun then resumes from the stored offsets
    /// and counts); default: a temporary directory.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
}

const SAMPLE: [&str; 3] = [
    "To be, or not to be: that is the question.",
    "To thine own self be true.",
    "Brevity is the soul of wit.",
];

const PARTITIONS: i32 = 2;
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    // The embedded broker lives until the end of `main`.
    let (brokers, mock) = match args.brokers {
        Some(brokers) => (brokers, None),
        None => {
            let mock = MockCluster::new(1).context("cannot start the mock cluster")?;
            (mock.bootstrap_servers(), Some(mock))
        }
    };
    for topic in [&args.input, &args.output] {
        match &mock {
            Some(mock) => mock.create_topic(topic, PARTITIONS, 1)?,
            None => create_topic(&brokers, topic)?,
        }
    }
    produce(&brokers, &args.input, &SAMPLE)?;
    // Read back only what this run adds to the output topic.
    let output_start = end_offsets(&brokers, &args.output)?;

    let scratch = tempfile::tempdir()?;
    let checkpoint_dir = args.checkpoint_dir.unwrap_or_else(|| scratch.path().to_path_buf());

    let source = KafkaSource::new(&brokers, &[args.input.as_str()])
        .deserializer(utf8())
        .bounded(true); // stop at the end offsets seen at start, like Spark's Trigger.AvailableNow
                        // Exactly-once needs a real broker (see the top of the file).
    let delivery = match mock {
        Some(_) => Delivery::AtLeastOnce,
        None => Delivery::ExactlyOnce,
    };
    let sink = KafkaSink::new(&brokers, &args.output, word_and_count).delivery(delivery);

    let job = JobBuilder::new("kafka-word-count").default_parallelism(PARTITIONS as usize);
    job.source("lines", source.factory())
        .uid("lines") // uids name state in checkpoints: keep them stable
        .flat_map(|line: String| words(&line))
        .key_by(|word: &String| word.clone())
        .aggregate("count", Count) // -> (word, running count), kept in RocksDB
        .uid("count")
        .sink("word-counts", sink.factory())
        .uid("word-counts"); // the exactly-once sink keeps not-yet-committed output in checkpoints
    let summary = job.build()?.run(JobConfig::with_checkpoint_dir(&checkpoint_dir))?;
    println!(
        "job done ({delivery:?}): restored from {:?}, last checkpoint {:?}, {:.1?}",
        summary.restored_from, summary.last_checkpoint, summary.elapsed
    );

    // Every output record is a running count; a word's final count is its largest.
    let output = read_committed(&brokers, &args.output, &output_start)?;
    println!("{} output records", output.len());
    let mut final_counts = BTreeMap::new();
    for (word, count) in output {
        let c = final_counts.entry(word).or_insert(0);
        *c = count.max(*c);
    }
    let mut by_count: Vec<_> = final_counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (word, count) in by_count {
        println!("{word} {count}");
    }
    Ok(())
}

/// Lower-case words of a line, punctuation dropped.
fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Kafka key = the word, value = its count as text.
fn word_and_count(r: &(String, u64), key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<i32>, String> {
    key.extend_from_slice(r.0.as_bytes());
    value.extend_from_slice(r.1.to_string().as_bytes());
    Ok(None) // the key picks the partition
}

/// Creates `topic` on a real broker unless it exists.
fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for result in runtime.block_on(admin.create_topics([&new], &AdminOptions::new()))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic `{topic}`: {code}"),
        }
    }
    Ok(())
}

/// Writes one record per line and waits until the broker has them.
fn produce(brokers: &str, topic: &str, lines: &[&str]) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    for line in lines {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(*line))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(TIMEOUT)?;
    Ok(())
}

/// The end offset of each partition of `topic`.
fn end_offsets(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    // read_uncommitted (the default): the high watermark.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let mut ends = BTreeMap::new();
    for partition in 0..PARTITIONS {
        ends.insert(partition, consumer.fetch_watermarks(topic, partition, TIMEOUT)?.1);
    }
    Ok(ends)
}

/// Reads `topic` from `start` to its current end as a read_committed consumer:
/// (word, count) pairs.
///
/// Kafka answers a transaction's commit before it has written the commit
/// markers into the partitions, so right after the job a read_committed
/// reader may still see the end (the last stable offset) below the
/// committed records. It first waits until the last stable offset of every
/// partition reaches its high watermark.
fn read_committed(brokers: &str, topic: &str, start: &BTreeMap<i32, i64>) -> anyhow::Result<Vec<(String, u64)>> {
    let consumer: BaseConsumer<ExpectEof> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka-word-count-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create_with_context(ExpectEof)?;
    // A read_committed client is answered with the last stable offset.
    let high_watermarks = end_offsets(brokers, topic)?;
    let settle_deadline = std::time::Instant::now() + TIMEOUT;
    for (&partition, &high) in &high_watermarks {
        while consumer.fetch_watermarks(topic, partition, TIMEOUT)?.1 < high {
            anyhow::ensure!(
                std::time::Instant::now() < settle_deadline,
                "the commit markers of `{topic}` partition {partition} did not arrive within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut assignment = TopicPartitionList::new();
    for (&partition, &offset) in start {
        assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while at_end.len() < start.len() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out reading `{topic}`");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                let word = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let count = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
                records.push((word, count));
            }
        }
    }
    Ok(records)
}

/// The reader stops at the end of each partition; rdkafka would also log
/// every end of a partition as an ERROR through the client context.
struct ExpectEof;

impl ClientContext for ExpectEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ExpectEof {}

/// Logs to stderr; `WEIR_LOG=info` shows checkpoints and more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
