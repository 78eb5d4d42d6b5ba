//! Apache Kafka for integration tests: a KRaft broker (one combined broker +
//! controller on 127.0.0.1, free ports) from the jars `scripts/kafka.sh`
//! fetches with Maven, formatted in a temp dir.
//!
//! [`Broker::shared`] is the one broker of a test binary, started on first
//! use: tests that share it use topics of their own. A test that stops,
//! restarts or freezes its broker takes one of its own with
//! [`Broker::start`] (or [`Broker::start_with`]), stopped by its PID when
//! dropped. Every broker the harness starts dies with the test binary
//! (`PR_SET_PDEATHSIG`), so none outlives a crashed or aborted run.
//!
//! Include it with `#[path = "support/broker.rs"] mod broker;`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
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
/// How long the broker may take to start (a JVM on a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the broker may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// `consume_all` gives up on partitions that delivered nothing for this long
/// (transaction markers occupy offsets that no message is returned for).
const CONSUME_STALL: Duration = Duration::from_secs(3);
/// How long `consume_all` waits for a topic's open transactions to end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The file in a broker's dir naming the test process that owns it.
const OWNER: &str = "owner.pid";
/// The line the broker logs once it serves clients.
const STARTED: &str = "Kafka Server started";

/// One record for [`Broker::produce`]: (key, payload, partition).
#[allow(dead_code)]
pub type ToProduce = (Option<Vec<u8>>, Vec<u8>, i32);

/// One record read back by [`Broker::consume_all`]: (partition, offset, key, payload).
#[allow(dead_code)]
pub type Consumed = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// How a test broker is formatted.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerOptions {
    /// The `transaction.version` feature: 1 (the classic protocol) or 2
    /// (KIP-890, the 4.x default, when `None`).
    pub transaction_version: Option<u8>,
    /// Also listen with TLS (`SSL`) and SASL/SCRAM-SHA-512 over TLS
    /// (`SASL_SSL`), with certificates made for this broker: see [`Secured`].
    pub secured: bool,
}

/// The secured listeners of a broker started with [`BrokerOptions::secured`].
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Secured {
    /// `127.0.0.1:PORT` of the TLS listener (no client authentication).
    pub ssl: String,
    /// `127.0.0.1:PORT` of the SASL_SSL listener (SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    /// Another CA, which did not: a client trusting only it must refuse the broker.
    pub untrusted_ca: PathBuf,
    /// The SCRAM user and its password.
    pub user: (&'static str, &'static str),
}

/// The SCRAM credential a secured broker is formatted with.
const SCRAM_USER: (&str, &str) = ("weir", "weir-scram-secret");
/// The password of the broker's PKCS#12 keystore.
const KEYSTORE_PASSWORD: &str = "weir-keystore";

/// How [`Broker::restart`] stops the broker.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a controlled shutdown.
    Term,
    /// SIGKILL: a crash, nothing flushed.
    Kill,
}

/// One running Apache Kafka broker, stopped on drop.
#[allow(dead_code)]
pub struct Broker {
    /// `host:port` to give clients as `bootstrap.servers`.
    pub bootstrap: String,
    /// The TLS and SASL listeners, when started with [`BrokerOptions::secured`].
    pub secured: Option<Secured>,
    child: Child,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

/// What the kill summaries name as the broker under the proof.
#[allow(dead_code)]
pub fn broker_name() -> String {
    let pom = include_str!("../../../tools/kafka/pom.xml");
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("?");
    format!("apache-kafka-{version}")
}

/// The workspace root: the test binaries of the root package and of its
/// members include this file.
fn root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("scripts/kafka.sh").is_file() {
        manifest
    } else {
        manifest.parent().expect("a member crate lives in the workspace")
    }
}

/// Runs `scripts/kafka.sh ARGS`, panicking with its output when it fails.
fn kafka_sh(args: &[&str]) -> String {
    kafka_sh_with(args, &[])
}

/// [`kafka_sh`] with environment variables.
fn kafka_sh_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg("scripts/kafka.sh")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash scripts/kafka.sh in {}: {e}", root().display()));
    assert!(
        out.status.success(),
        "scripts/kafka.sh {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    /// The broker of this test binary, started on first use and killed when
    /// the binary exits. Tests sharing it use topics of their own and must
    /// not stop it.
    pub fn shared() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| Broker::start_for_binary(BrokerOptions::default()))
    }

    /// Starts a broker that lives as long as the test binary (for a static
    /// of a binary whose tests share it): the death signal follows the
    /// *thread* that spawned the broker, so it is spawned from one that never
    /// ends. Such a broker must not be restarted.
    pub fn start_for_binary(options: BrokerOptions) -> Broker {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-binary-broker".into())
            .spawn(move || {
                let broker = std::panic::catch_unwind(|| Broker::start_with(options));
                let _ = tx.send(broker);
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot spawn the broker's thread");
        match rx.recv().expect("the broker's thread answers") {
            Ok(broker) => broker,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts a broker of this test's own (default features).
    pub fn start() -> Broker {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker of this test's own, formatted with `options`; returns
    /// once it serves clients.
    pub fn start_with(options: BrokerOptions) -> Broker {
        kafka_sh(&["install"]);
        remove_stale_dirs();
        // A picked port may be taken before the JVM binds it: then the broker
        // exits at once, and a new pair of ports is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(options) {
                Ok(broker) => return broker,
                Err(e) => failures.push(e),
            }
        }
        panic!("Apache Kafka did not start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(options: BrokerOptions) -> Result<Broker, String> {
        let dir = tempfile::Builder::new()
            .prefix("weir-kafka-")
            .tempdir()
            .expect("cannot create a temp dir for the broker");
        std::fs::write(dir.path().join(OWNER), std::process::id().to_string()).expect("cannot write the owner file");
        let (port, controller_port) = (free_port(), free_port());
        let dir_arg = dir.path().to_str().expect("temp dir path is UTF-8");
        let tv = options.transaction_version.map(|v| v.to_string()).unwrap_or_default();
        let format = ["format", dir_arg, &port.to_string(), &controller_port.to_string(), &tv];
        let secured = if options.secured {
            let (secured, extra) = secure(dir.path(), port, controller_port);
            let scram = format!("SCRAM-SHA-512=[name={},password={}]", SCRAM_USER.0, SCRAM_USER.1);
            let extra = extra.to_str().expect("temp dir path is UTF-8");
            kafka_sh_with(&format, &[("KAFKA_EXTRA_CONFIG", extra), ("KAFKA_ADD_SCRAM", &scram)]);
            Some(secured)
        } else {
            kafka_sh(&format);
            None
        };
        let log_path = dir.path().join("broker.log");
        let mut broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            secured,
            child: spawn(dir.path(), &log_path)?,
            log_path,
            dir,
        };
        match broker.wait_ready(0) {
            Ok(()) => Ok(broker),
            Err(e) => {
                broker.stop(Stop::Kill);
                Err(e)
            }
        }
    }

    /// Waits until the broker logged its start for the `n`-th time (0 = the
    /// first start) and accepts connections.
    fn wait_ready(&mut self, n: usize) -> Result<(), String> {
        let addr: SocketAddr = self.bootstrap.parse().expect("bootstrap is an address");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the broker") {
                return Err(format!(
                    "the broker exited with {status} before serving on {addr}; its log:\n{}",
                    self.log()
                ));
            }
            if self.log().matches(STARTED).count() > n
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the broker did not serve on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM or SIGKILL) and starts it again on the same
    /// ports and data after `down_for`: clients see it go away and come back.
    pub fn restart(&mut self, down_for: Duration, how: Stop) {
        let starts = self.log().matches(STARTED).count();
        self.stop(how);
        std::thread::sleep(down_for);
        self.child = spawn(self.dir.path(), &self.log_path).expect("cannot restart the broker");
        if let Err(e) = self.wait_ready(starts) {
            panic!("the broker did not come back after {how:?}: {e}");
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

    /// Deletes the records of `topic`/`partition` before `offset` (what
    /// retention does), returning the new log start.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> i64 {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        let options = AdminOptions::new()
            .operation_timeout(Some(CLIENT_TIMEOUT))
            .request_timeout(Some(CLIENT_TIMEOUT));
        let result = runtime
            .block_on(admin.delete_records(&tpl, &options))
            .unwrap_or_else(|e| panic!("DeleteRecords {topic}/{partition} before {offset} failed: {e}"));
        let entry = result.find_partition(topic, partition).expect("the deleted partition");
        assert!(
            entry.error().is_ok(),
            "DeleteRecords {topic}/{partition}: {:?}",
            entry.error()
        );
        match entry.offset() {
            Offset::Offset(low) => low,
            other => panic!("DeleteRecords {topic}/{partition} answered {other:?}"),
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
    ///
    /// With `read_committed` it first waits (up to [`SETTLE_TIMEOUT`]) until
    /// no transaction is open on the topic: a producer's commit returns once
    /// the coordinator has logged it, and the markers that make its records
    /// readable reach the partitions a moment later, so a job that just
    /// exited may still have its last transaction invisible.
    pub fn consume_all(&self, topic: &str, read_committed: bool) -> Vec<Consumed> {
        if read_committed {
            self.wait_until_settled(topic);
        }
        self.consume_now(topic, read_committed)
    }

    /// As [`Broker::consume_all`] with `read_committed`, without waiting for
    /// open transactions: what a reader sees now, for polling a running job.
    pub fn consume_committed_so_far(&self, topic: &str) -> Vec<Consumed> {
        self.consume_now(topic, true)
    }

    /// Waits until every partition's last stable offset equals its high
    /// watermark (no open transaction), or [`SETTLE_TIMEOUT`] passed.
    fn wait_until_settled(&self, topic: &str) {
        let client = |isolation: &str| -> BaseConsumer {
            self.client_config()
                .set("group.id", "weir-test-settle")
                .set("isolation.level", isolation)
                .create()
                .unwrap_or_else(|e| panic!("cannot create a consumer for {}: {e}", self.bootstrap))
        };
        // ListOffsets answers a read_committed client with the last stable offset.
        let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
        let metadata = committed
            .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata for {topic} failed: {e}"));
        let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return;
        };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for p in entry.partitions() {
            loop {
                let end = |c: &BaseConsumer| {
                    c.fetch_watermarks(topic, p.id(), CLIENT_TIMEOUT)
                        .unwrap_or_else(|e| panic!("watermarks of {topic}/{} failed: {e}", p.id()))
                        .1
                };
                let (stable, high) = (end(&committed), end(&uncommitted));
                if stable >= high {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "{topic}/{}: a transaction is still open after {SETTLE_TIMEOUT:?} \
                         (last stable offset {stable}, high watermark {high}); reading to {stable}",
                        p.id()
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn consume_now(&self, topic: &str, read_committed: bool) -> Vec<Consumed> {
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

    /// Stops the broker: SIGKILL, or SIGTERM with up to 30 s to exit, then
    /// SIGKILL; always reaped.
    fn stop(&mut self, how: Stop) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits in pid_t");
        // A frozen broker (a test sent SIGSTOP) must be able to act on SIGTERM.
        let signal = if how == Stop::Kill {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("broker: Apache Kafka (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}, sending SIGKILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop(Stop::Term);
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

/// Starts the broker formatted in `dir` (`scripts/kafka.sh run` execs the
/// JVM, so the child is the broker), appending its output to `log_path`.
fn spawn(dir: &Path, log_path: &Path) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut cmd = Command::new("bash");
    cmd.arg("scripts/kafka.sh")
        .arg("run")
        .arg(dir)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of
    // the parent. The broker is killed when the thread that spawned it (for
    // the shared broker: one that lives as long as the test binary) ends.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("cannot run scripts/kafka.sh run: {e}"))
}

/// Removes the dirs of brokers whose test binary is gone: a shared broker's
/// dir outlives its binary (a static is never dropped).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("weir-kafka-"));
        let owner = std::fs::read_to_string(path.join(OWNER))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let (true, Some(pid)) = (named, owner) {
            // SAFETY: kill(pid, 0) sends nothing: it only asks whether the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0;
            if pid != std::process::id() as i32 && gone {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Makes a CA, a broker certificate it signs (for IP 127.0.0.1) in a PKCS#12
/// keystore and an unrelated CA, and writes the TLS and SASL_SSL listener
/// settings; returns them and the settings file for `kafka.sh format`.
fn secure(dir: &Path, port: u16, controller_port: u16) -> (Secured, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let days = ["-days", "2"];
    let new_key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key,
            &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=weir-test-ca"],
            &days,
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key,
            &[
                "-keyout",
                "other.key",
                "-out",
                "untrusted-ca.pem",
                "-subj",
                "/CN=untrusted",
            ],
            &days,
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &new_key,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    openssl(
        &[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
            ][..],
            &["-out", "server.pem", "-extfile", "san.ext"],
            &days,
        ]
        .concat(),
    );
    let pass = format!("pass:{KEYSTORE_PASSWORD}");
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "server.pem",
        "-inkey",
        "server.key",
        "-certfile",
        "ca.pem",
        "-out",
        "server.p12",
        "-passout",
        &pass,
    ]);
    let (ssl, sasl_ssl) = (free_port(), free_port());
    let keystore = dir.join("server.p12");
    let extra = dir.join("secured.properties");
    std::fs::write(
        &extra,
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             ssl.keystore.type=PKCS12\n\
             ssl.keystore.location={}\n\
             ssl.keystore.password={KEYSTORE_PASSWORD}\n\
             ssl.key.password={KEYSTORE_PASSWORD}\n\
             ssl.client.auth=none\n",
            keystore.display()
        ),
    )
    .expect("write the secured listener settings");
    let secured = Secured {
        ssl: format!("127.0.0.1:{ssl}"),
        sasl_ssl: format!("127.0.0.1:{sasl_ssl}"),
        ca: dir.join("ca.pem"),
        untrusted_ca: dir.join("untrusted-ca.pem"),
        user: SCRAM_USER,
    };
    (secured, extra)
}
