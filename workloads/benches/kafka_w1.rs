//! W1 through Kafka on Apache Kafka (`scripts/kafka.sh`): topic `in` (4 partitions, values
//! `id,key,value`) -> key_by -> running count and sum in RocksDB -> topic
//! `out`, exactly-once, checkpoint every 1 s, bounded; next to a **raw
//! pipe** measured in the same run: a plain rdkafka consumer copying `in` to
//! another topic through a transactional producer that commits every second
//! (the client settings the job uses, no engine), timed like the job from
//! creating its clients to its last commit; and **Kafka Streams** 4.4
//! (`benches/peers/kafka-streams`: exactly_once_v2, RocksDB store, one
//! thread, 1 s commits) on the same input. Prints one JSON line each.
//!
//! `cargo bench --bench kafka_w1 [-- --records N]` (needs Java 17+ and Maven:
//! the broker's jars are fetched on first use).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir::JobConfig;
use weir_workloads::jobs::kafka_count_job;

#[path = "support/kafka.rs"]
mod kafka;
use kafka::{count_options, create_topics, produce_input, send, start_broker, Broker, Error};

/// Copies `in` to `pipe-out` with the job's client settings and no engine:
/// one consumer whose partitions are split into queues of their own (as the
/// job's source does), drained round-robin, and a transactional producer
/// committing every second. Timed like the job: from creating its clients
/// (the job's time includes its start, with the same consumer and
/// transactional producer set-up) to the last commit.
fn raw_pipe(brokers: &str, n: u64) -> Result<f64, Error> {
    let started = Instant::now();
    let c: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "raw-pipe")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "20")
            .create()?,
    );
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("transactional.id", "raw-pipe")
        .create()?;
    p.init_transactions(Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    for part in 0..4 {
        tpl.add_partition_offset("in", part, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let queues: Vec<_> = (0..4)
        .map(|part| {
            c.split_partition_queue("in", part)
                .ok_or("cannot split a partition queue")
        })
        .collect::<Result<_, _>>()?;
    let mut last_commit = Instant::now();
    p.begin_transaction()?;
    let mut copied = 0u64;
    while copied < n {
        let mut idle = true;
        for queue in &queues {
            // Up to a batch per partition, without waiting.
            for _ in 0..1024 {
                match queue.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        send(&p, "pipe-out", m.payload().unwrap_or_default(), None)?;
                        copied += 1;
                        idle = false;
                    }
                    Some(Err(e)) => eprintln!("raw pipe: {e}"),
                    None => break,
                }
            }
        }
        // Serves the consumer's own events (and waits a little when idle);
        // records fetched before the split come through here.
        if let Some(Ok(m)) = c.poll(if idle { Duration::from_millis(5) } else { Duration::ZERO }) {
            send(&p, "pipe-out", m.payload().unwrap_or_default(), None)?;
            copied += 1;
        }
        p.poll(Duration::ZERO);
        if last_commit.elapsed() >= Duration::from_secs(1) {
            p.commit_transaction(Duration::from_secs(60))?;
            p.begin_transaction()?;
            last_commit = Instant::now();
        }
    }
    p.commit_transaction(Duration::from_secs(60))?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn main() -> Result<(), Error> {
    // `WEIR_LOG=info` shows the job's phases (start, checkpoints, end) with times.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(2_000_000), |s| s.parse())?;
    // A fresh broker with only the input for each measurement: every run
    // starts from the same broker state (page cache, log segments).
    let fresh_broker = || -> Result<Broker, Error> {
        let broker = start_broker()?;
        create_topics(&broker.1, &["in", "out", "pipe-out"])?;
        let t = Instant::now();
        produce_input(&broker.1, 0..n)?;
        eprintln!("produced {n} records in {:.1?}", t.elapsed());
        Ok(broker)
    };
    let pipe = raw_pipe(&fresh_broker()?.1, n)?;
    println!(
        "{{\"bench\":\"kafka-raw-pipe\",\"records\":{n},\"records_per_s\":{pipe:.0},\"commit_interval_ms\":1000}}"
    );

    let mut weir_p1 = 0.0;
    for p in [1usize, 2] {
        let broker = fresh_broker()?;
        let dir = tempfile::tempdir()?;
        let options = count_options(&broker.1, &format!("kafka-w1-p{p}"), "out", p, true);
        let (job, progress) = kafka_count_job(&options)?;
        let config = JobConfig {
            checkpoint_interval: Some(Duration::from_secs(1)),
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        let summary = job.run(config)?;
        let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(done, n, "the job must read every record");
        let rate = n as f64 / summary.elapsed.as_secs_f64();
        println!(
            "{{\"bench\":\"kafka-W1-exactly-once\",\"p\":{p},\"records\":{n},\"records_per_s\":{rate:.0},\"ratio_to_raw_pipe\":{:.2},\"checkpoints\":{},\"elapsed_s\":{:.2}}}",
            rate / pipe,
            summary.checkpoints_completed,
            summary.elapsed.as_secs_f64()
        );
        if p == 1 {
            weir_p1 = rate;
        }
    }

    // The peer: Kafka Streams, exactly_once_v2, RocksDB store, one thread,
    // commit interval 1 s, on a fresh broker with the same input.
    let broker = fresh_broker()?;
    let state = tempfile::tempdir()?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let peer = Command::new("bash")
        .arg("benches/peers/kafka-streams/run.sh")
        .args([
            "--bootstrap",
            &broker.1,
            "--input",
            "in",
            "--output",
            "out",
            "--records",
            &n.to_string(),
        ])
        .args(["--threads", "1", "--commit-interval-ms", "1000", "--state-dir"])
        .arg(state.path())
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()?;
    if !peer.status.success() {
        return Err(format!("the Kafka Streams peer failed ({})", peer.status).into());
    }
    let line = String::from_utf8_lossy(&peer.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim())?;
    let streams = json["records_per_s"]
        .as_f64()
        .ok_or("the peer printed no records_per_s")?;
    println!(
        "{{\"bench\":\"kafka-W1-exactly-once\",\"peer\":\"kafka-streams\",\"p\":1,\"records\":{n},\"records_per_s\":{streams:.0},\"ratio_to_raw_pipe\":{:.2},\"weir_p1_to_peer\":{:.2},\"seconds\":{}}}",
        streams / pipe,
        weir_p1 / streams,
        json["seconds"]
    );
    Ok(())
}
