//! The "nightly batch" that resumes from its Kafka offsets: a bounded job
//! run once per night over what arrived since the last run (Spark's
//! `Trigger.AvailableNow`, Flink's bounded source with stop-with-savepoint).
//!
//! ```text
//! orders (Kafka, "customer,cents") -> key_by(customer) -> reduce: running (orders, cents) in RocksDB -> printed
//! ```
//!
//! ```sh
//! cargo run --example nightly_batch                                  # embedded broker (librdkafka's mock cluster)
//! cargo run --example nightly_batch -- --brokers 127.0.0.1:9092 [--topic orders] [--checkpoint-dir DIR]
//! ```
//!
//! It produces night 1's orders, runs the job bounded, produces night 2's
//! orders and runs the same job again with the same checkpoint directory:
//!
//! - a bounded run reads each partition up to the end offset seen at its
//!   start, then takes a **final checkpoint** holding the Kafka offsets it
//!   reached and the keyed state (the totals per customer), and exits;
//! - the next run restores that checkpoint: it reads **only the records added
//!   since**, and the running totals continue where they stopped.
//!
//! The offsets live in weir's checkpoints, not in the consumer group (which
//! gets them too, for monitoring): state and offsets can never disagree.

use anyhow::Context as _;
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::checkpoint::CheckpointStore;
use weir::connectors::collect::CollectSink;
use weir::connectors::kafka::stored_offsets;
use weir::connectors::kafka::{KafkaRecord, KafkaSource};
use weir::{JobBuilder, JobConfig};

#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers; without it an in-process mock cluster is started.
    #[arg(long)]
    brokers: Option<String>,
    /// Input topic; values `customer,cents`.
    #[arg(long, default_value = "orders")]
    topic: String,
    /// Where the checkpoints live between runs; default: a temporary directory.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
}

const JOB: &str = "nightly-batch";
const PARTITIONS: i32 = 2;

/// The orders that arrive during each day.
const NIGHT_1: [&str; 4] = ["alice,1250", "bob,800", "alice,750", "carol,2000"];
const NIGHT_2: [&str; 3] = ["bob,400", "dave,1500", "alice,1000"];

/// (customer, orders so far, cents so far): the running total of a customer.
type Total = (String, u64, u64);

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
    match &mock {
        Some(mock) => mock.create_topic(&args.topic, PARTITIONS, 1)?,
        None => create_topic(&brokers, &args.topic)?,
    }
    let scratch = tempfile::tempdir()?;
    let checkpoint_dir = args.checkpoint_dir.unwrap_or_else(|| scratch.path().to_path_buf());

    for (night, orders) in [(1, &NIGHT_1[..]), (2, &NIGHT_2[..])] {
        produce(&brokers, &args.topic, orders)?;
        println!("night {night}: {} new orders produced", orders.len());
        run_batch(&brokers, &args.topic, &checkpoint_dir)?;
    }
    Ok(())
}

/// One bounded run: reads what is new, updates the totals, ends with a final checkpoint.
fn run_batch(brokers: &str, topic: &str, checkpoint_dir: &Path) -> anyhow::Result<()> {
    let source = KafkaSource::new(brokers, &[topic])
        .deserializer(parse_order)
        .bounded(true); // read up to the end offsets seen at start, then stop
    let read = source.progress(); // records read by this run
    let totals = Arc::new(Mutex::new(Vec::new()));

    let job = JobBuilder::new(JOB).default_parallelism(PARTITIONS as usize);
    job.source("orders", source.factory())
        .uid("orders") // the offsets are stored under this uid...
        .key_by(|t: &Total| t.0.clone())
        .reduce("totals", |a: &Total, b: &Total| (a.0.clone(), a.1 + b.1, a.2 + b.2))
        .uid("totals") // ...and the totals under this one
        // A real batch would write to Kafka (KafkaSink, exactly-once) or to files (FileSink).
        .sink("collect", CollectSink::factory(totals.clone()));
    let summary = job.build()?.run(JobConfig::with_checkpoint_dir(checkpoint_dir))?;

    println!(
        "  run: restored from checkpoint {:?}, read {} records, final checkpoint {:?}",
        summary.restored_from,
        read.done.load(Ordering::Relaxed),
        summary.last_checkpoint
    );
    // The reduce emits a customer's running total after each order: print the
    // newest total of each customer this run updated.
    let mut latest = BTreeMap::new();
    for (customer, orders, cents) in totals.lock().map_err(|_| anyhow::anyhow!("a sink panicked"))?.drain(..) {
        let entry = latest.entry(customer).or_insert((0, 0));
        *entry = (*entry).max((orders, cents));
    }
    for (customer, (orders, cents)) in latest {
        println!(
            "  {customer:<6} orders {orders}  total {}.{:02}",
            cents / 100,
            cents % 100
        );
    }
    // What the next run starts from: the offsets in the final checkpoint.
    if let Some(manifest) = CheckpointStore::open(checkpoint_dir, JOB)?.restore_point()? {
        let offsets: Vec<String> = stored_offsets(&manifest)
            .iter()
            .map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next_offset))
            .collect();
        println!(
            "  offsets in checkpoint {}: {}",
            manifest.checkpoint_id,
            offsets.join(" ")
        );
    }
    Ok(())
}

/// `customer,cents` -> (customer, 1 order, cents). An `Err` fails the job
/// naming topic, partition and offset (or see `KafkaSource::on_bad_record`).
fn parse_order(r: &KafkaRecord<'_>) -> Result<Total, String> {
    let text = std::str::from_utf8(r.payload.unwrap_or_default()).map_err(|e| e.to_string())?;
    let (customer, cents) = text
        .split_once(',')
        .ok_or(format!("expected `customer,cents`, got {text:?}"))?;
    let cents = cents
        .trim()
        .parse()
        .map_err(|e| format!("bad amount in {text:?}: {e}"))?;
    Ok((customer.to_string(), 1, cents))
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

/// Writes the orders, keyed by customer, and waits until the broker has them.
fn produce(brokers: &str, topic: &str, orders: &[&str]) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    for order in orders {
        let customer = order.split(',').next().unwrap_or_default();
        producer
            .send(BaseRecord::to(topic).key(customer).payload(*order))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Logs to stderr; `WEIR_LOG=info` shows checkpoints and more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
