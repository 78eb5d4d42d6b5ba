//! Apache Kafka for the Kafka benches: a fresh broker from `scripts/kafka.sh`,
//! topics, and the W1 input (`id,key,value`).
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::connectors::generator::w1_event;

/// Any error of a bench.
pub type Error = Box<dyn std::error::Error>;

/// The broker process, its address, and its data directory (removed on drop).
pub struct Broker(pub Child, pub String, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts a fresh one-node Apache Kafka on free ports; returns once it serves.
pub fn start_broker() -> Result<Broker, Error> {
    // scripts/kafka.sh fetches Apache Kafka's jars (Maven) and formats a
    // KRaft data dir; `run` execs the JVM, so the child is the broker.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = tempfile::tempdir()?;
    let free = || -> Result<u16, Error> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (port, controller) = (free()?, free()?);
    let data = dir.path().to_str().ok_or("temp dir path is not UTF-8")?;
    let format = Command::new("bash")
        .args([
            "scripts/kafka.sh",
            "format",
            data,
            &port.to_string(),
            &controller.to_string(),
        ])
        .current_dir(root)
        .output()?;
    if !format.status.success() {
        return Err(format!(
            "scripts/kafka.sh format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        )
        .into());
    }
    let log = dir.path().join("broker.log");
    let child = Command::new("bash")
        .args(["scripts/kafka.sh", "run", data])
        .current_dir(root)
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run scripts/kafka.sh: {e}"))?;
    let broker = Broker(child, format!("127.0.0.1:{port}"), dir);
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Kafka Server started")
    {
        if started.elapsed() > Duration::from_secs(90) {
            return Err(format!("Apache Kafka did not start (log: {})", log.display()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(broker)
}

/// Creates `topics` with 4 partitions each.
pub fn create_topics(brokers: &str, topics: &[&str]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 4, TopicReplication::Fixed(1)))
        .collect();
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("create {t}: {e}"))?;
    }
    Ok(())
}

/// Sends the W1 value `id,key,value` of id `i` to topic `in`, partition `i % 4`.
pub fn send_w1(p: &BaseProducer, i: u64) -> Result<(), Error> {
    let e = w1_event(i, 0);
    send(
        p,
        "in",
        format!("{},{},{}", e.index, e.key, e.value).as_bytes(),
        Some((i % 4) as i32),
    )
}

/// Sends one value, waiting while the producer queue is full.
pub fn send(p: &BaseProducer, topic: &str, value: &[u8], partition: Option<i32>) -> Result<(), Error> {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
    if let Some(part) = partition {
        record = record.partition(part);
    }
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                p.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Produces the W1 values `id,key,value` of ids `range` to topic `in`, spread over 4 partitions.
pub fn produce_input(brokers: &str, range: std::ops::Range<u64>) -> Result<(), Error> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    for i in range {
        send_w1(&p, i)?;
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// The value of flag `name` (`--name VALUE`) as a number, else `default`.
pub fn arg(args: &[String], name: &str, default: u64) -> Result<u64, Error> {
    Ok(args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(default), |s| s.parse())?)
}

/// `kafka-count` from `in` to `output` on `brokers`, exactly-once, failing on bad records.
pub fn count_options(
    brokers: &str,
    job: &str,
    output: &str,
    parallelism: usize,
    bounded: bool,
) -> weir_workloads::jobs::KafkaCountOptions {
    weir_workloads::jobs::KafkaCountOptions {
        job: job.into(),
        cluster: brokers.into(),
        input: "in".into(),
        output: output.into(),
        parallelism,
        bounded,
        delivery: weir::connectors::kafka::Delivery::ExactlyOnce,
        bad_records: weir::connectors::kafka::BadRecordPolicy::Fail,
        lost_input: Default::default(),
        source_properties: Vec::new(),
        sink_properties: Vec::new(),
        only_partitions: None,
        stage: weir_workloads::jobs::KafkaCountStage::Whole,
    }
}
