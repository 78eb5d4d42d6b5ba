//! A real Kafka-protocol broker for integration tests: noida-db (a prebuilt
//! binary from a PyPI wheel, installed by `scripts/install-noida.sh`), started
//! per test on a free port of 127.0.0.1 with its own data dir, and stopped by
//! its PID when the [`Broker`] is dropped.
//!
//! Include it with `#[path = "support/broker.rs"] mod broker;`. The binary is
//! taken from `WEIR_NOIDA_DB`, else `${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}/noida_db/noida-db`,
//! and installed there if missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// How long a client call (metadata, watermarks, flush) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to accept TCP connections after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// `consume_all` gives up on partitions that delivered nothing for this long
/// (transaction markers occupy offsets that no message is returned for).
const CONSUME_STALL: Duration = Duration::from_secs(3);

/// One record for [`Broker::produce`]: (key, payload, partition).
#[allow(dead_code)]
pub type ToProduce = (Option<Vec<u8>>, Vec<u8>, i32);

/// One record read back by [`Broker::consume_all`]: (partition, offset, key, payload).
#[allow(dead_code)]
pub type Consumed = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// One running noida-db broker (Kafka protocol only), stopped on drop.
#[allow(dead_code)]
pub struct Broker {
    /// `host:port` to give clients as `bootstrap.servers`.
    pub bootstrap: String,
    child: Child,
    log_path: PathBuf,
    data_dir: tempfile::TempDir,
}

/// The noida-db binary: `WEIR_NOIDA_DB`, else the tools dir, installing it there if missing.
#[allow(dead_code)]
pub fn noida_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_NOIDA_DB").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WEIR_NOIDA_DB={} is not a file (unset it to install noida-db with scripts/install-noida.sh)",
            path.display()
        );
        return path;
    }
    let tools = std::env::var_os("WEIR_TOOLS_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp/weir-tools"), PathBuf::from);
    let path = tools.join("noida_db").join("noida-db");
    if path.is_file() {
        return path;
    }
    // The workspace root (the test binaries of every package include this file).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    eprintln!("broker: {} missing, running scripts/install-noida.sh", path.display());
    let out = Command::new("bash")
        .arg("scripts/install-noida.sh")
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash scripts/install-noida.sh in {root}: {e}"));
    assert!(
        out.status.success(),
        "scripts/install-noida.sh failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()));
    match printed {
        Some(p) if p.is_file() => p,
        _ => {
            assert!(
                path.is_file(),
                "scripts/install-noida.sh succeeded but {} is missing; it printed:\n{stdout}",
                path.display()
            );
            path
        }
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local_addr of a bound listener").port()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

#[allow(dead_code)]
impl Broker {
    /// Starts a broker on a free port with a fresh data dir; returns once it accepts connections.
    pub fn start() -> Broker {
        let binary = noida_binary();
        // The port is free when picked but could be taken before noida-db binds
        // it: retry a few times with a new port if the broker exits early.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(broker) => return broker,
                Err(e) => failures.push(e),
            }
        }
        panic!("noida-db did not start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(binary: &Path) -> Result<Broker, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("weir-noida-")
            .tempdir()
            .expect("cannot create a temp dir for the broker");
        let log_path = data_dir.path().join("noida-db.log");
        let log = File::create(&log_path).expect("cannot create the broker log file");
        let port = free_port();
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Another process may have taken the port meanwhile: then noida-db
        // exits at once ("error: kafka: port N is already in use"), so a
        // connection counts only while noida-db runs and once it has printed
        // its `kafka 127.0.0.1:PORT` line (just after it listens), or has
        // stayed up for a moment after the first connection.
        let banner = format!("127.0.0.1:{port}");
        let mut first_accept: Option<Instant> = None;
        loop {
            let exited = child.try_wait().expect("try_wait on noida-db");
            if exited.is_none() {
                if first_accept.is_none() && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    first_accept = Some(Instant::now());
                }
                if let Some(at) = first_accept {
                    if read_log(&log_path).contains(&banner) || at.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                }
            }
            if let Some(status) = exited {
                return Err(format!(
                    "noida-db exited with {status} before accepting on {addr}; its log:\n{}",
                    read_log(&log_path)
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "noida-db did not accept connections on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    read_log(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Broker {
            bootstrap: addr.to_string(),
            child,
            log_path,
            data_dir,
        })
    }

    /// Stops the broker (SIGTERM) and starts it again on the same port with
    /// the same data: clients see the broker go away and come back.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        let port: u16 = self
            .bootstrap
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port of bootstrap");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("broker log");
        self.child = Command::new(noida_binary())
            .args(["start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log file handle"))
            .stderr(log)
            .spawn()
            .expect("cannot restart noida-db");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "noida-db did not come back on {addr}:\n{}",
                self.log()
            );
            assert!(
                self.child.try_wait().expect("try_wait").is_none(),
                "noida-db exited on restart:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// A client config with `bootstrap.servers` set to this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Creates `topic` with `partitions` partitions (replication 1) and waits
    /// until metadata shows all of them.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .unwrap_or_else(|e| panic!("cannot create an admin client for {}: {e}", self.bootstrap));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new()
            .operation_timeout(Some(CLIENT_TIMEOUT))
            .request_timeout(Some(CLIENT_TIMEOUT));
        let results = runtime
            .block_on(admin.create_topics([&new_topic], &options))
            .unwrap_or_else(|e| panic!("CreateTopics {topic} ({partitions} partitions) failed: {e}"));
        for result in results {
            if let Err((name, code)) = result {
                panic!("CreateTopics {name} ({partitions} partitions) refused: {code:?} ({code})");
            }
        }
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let last = match admin.inner().fetch_metadata(Some(topic), Duration::from_secs(2)) {
                Ok(metadata) => {
                    let ready = metadata.topics().iter().find(|t| t.name() == topic).map(|t| {
                        t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
                    });
                    if ready == Some(true) {
                        return;
                    }
                    format!("topic entry {ready:?}")
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "topic {topic} not in metadata with {partitions} partitions after {CLIENT_TIMEOUT:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Produces `(key, payload, partition)` records in order (acks all, one
    /// request in flight), flushes, and asserts that every one was delivered.
    /// Not idempotent: librdkafka's idempotent producer adds ~0.5 s per call.
    pub fn produce(&self, topic: &str, records: &[ToProduce]) {
        produce_to(&self.bootstrap, topic, records);
    }
}

/// [`Broker::produce`] for a broker known by its address (from another thread).
#[allow(dead_code)]
pub fn produce_to(bootstrap: &str, topic: &str, records: &[ToProduce]) {
    {
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .unwrap_or_else(|e| panic!("cannot create a producer for {bootstrap}: {e}"));
        for (key, payload, partition) in records {
            let mut record = BaseRecord::to(topic).payload(payload).partition(*partition);
            if let Some(key) = key {
                record = record.key(key);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("produce to {topic}/{partition} failed to enqueue: {e}"),
                }
            }
        }
        producer
            .flush(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("flush of {} records to {topic} failed: {e}", records.len()));
        let deliveries = producer.context();
        let errors = deliveries.errors.lock().expect("delivery errors lock");
        assert!(
            errors.is_empty(),
            "{} deliveries to {topic} failed: {errors:?}",
            errors.len()
        );
        assert_eq!(
            deliveries.ok.load(Ordering::SeqCst),
            records.len(),
            "not every record produced to {topic} was acknowledged"
        );
    }
}

#[allow(dead_code)]
impl Broker {
    /// Reads every partition of `topic` from its start to the high watermark
    /// fetched now (with `read_committed`: the last stable offset), by manual
    /// assignment. Returns `(partition, offset, key, payload)` ordered by
    /// partition, then offset.
    pub fn consume_all(&self, topic: &str, read_committed: bool) -> Vec<Consumed> {
        let isolation = if read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", format!("weir-test-consume-all-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // An empty fetch at the end waits this long: it delays the EOF.
            .set("fetch.wait.max.ms", "50")
            .set("isolation.level", isolation)
            .create()
            .unwrap_or_else(|e| panic!("cannot create a consumer for {}: {e}", self.bootstrap));
        let metadata = consumer
            .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata for {topic} failed: {e}"));
        let entry = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("topic {topic} not in metadata"));
        assert!(
            entry.error().is_none(),
            "topic {topic} metadata error: {:?}",
            entry.error()
        );

        // partition -> end offset (exclusive) still to reach
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in entry.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), CLIENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{} failed: {e}", p.id()));
            if high > low {
                ends.insert(p.id(), high);
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .expect("add partition to assignment");
            }
        }
        let mut out: Vec<Consumed> = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer
            .assign(&assignment)
            .unwrap_or_else(|e| panic!("assign {topic} failed: {e}"));

        let mut open: BTreeSet<i32> = ends.keys().copied().collect();
        let mut last_progress = Instant::now();
        while !open.is_empty() {
            if last_progress.elapsed() > CONSUME_STALL {
                // Transaction markers (or records of aborted transactions, for
                // read_committed) hold offsets no message is returned for.
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let (p, offset) = (m.partition(), m.offset());
                    let Some(&end) = ends.get(&p) else { continue };
                    if offset < end {
                        last_progress = Instant::now();
                        out.push((
                            p,
                            offset,
                            m.key().map(<[u8]>::to_vec),
                            m.payload().unwrap_or(&[]).to_vec(),
                        ));
                    }
                    if offset + 1 >= end {
                        open.remove(&p);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => panic!("consuming {topic} ({isolation}) failed: {e}"),
            }
        }
        out.sort_by_key(|r| (r.0, r.1));
        for w in out.windows(2) {
            assert!(
                w[0].0 != w[1].0 || w[0].1 < w[1].1,
                "offset {} of {topic}/{} read twice",
                w[1].1,
                w[1].0
            );
        }
        out
    }

    /// Stops the broker: SIGTERM, up to 5 s to exit, then SIGKILL; always reaped.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("broker: noida-db (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}, sending SIGKILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("broker {} log:\n{}", self.bootstrap, self.log());
        }
    }
}

/// Counts delivery reports of [`Broker::produce`].
#[derive(Default)]
struct Deliveries {
    ok: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, m)) => {
                self.errors
                    .lock()
                    .expect("delivery errors lock")
                    .push(format!("{}/{}: {e}", m.topic(), m.partition()))
            }
        }
    }
}
