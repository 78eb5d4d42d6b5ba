//! Scale-out on Kafka: `weir run kafka-count --distributed` members share
//! the input's partitions through the consumer group `weir-<job>`, one shard
//! job per partition with its checkpoints on the S3 test server. While the
//! input grows (partitioned by key): members A and B start, A is SIGKILLed
//! (its shards move after the session timeout), C joins, B leaves
//! gracefully (SIGTERM: its shards stop with a final checkpoint and move),
//! A comes back (shards move to it). The read_committed output must equal
//! a failure-free run's: every index once, per key counts 1..n.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;
#[path = "support/s3.rs"]
mod s3;

use broker::Broker;
use common::{compare, publish_summary, wait_for_exit, WEIR};
use kafka_data::{expected, input_by_key, output};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;
/// At least this many input records.
const RECORDS: u64 = 150_000;

/// A member process and its log so far.
struct Member {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Member {
    fn start(name: &'static str, broker: &Broker, server: &s3::S3Server, url: &str, local: &Path) -> Member {
        let mut child = Command::new(WEIR)
            .args(["run", "kafka-count", "--distributed", "--member-id", name])
            .args([
                "--session-timeout-ms",
                "6000",
                "--parallelism",
                "1",
                "--checkpoint-interval-ms",
                "200",
            ])
            .args(["--input", "d-in", "--output", "d-out", "--brokers", &broker.bootstrap])
            .args(["--checkpoint-dir", url])
            .envs(server.env())
            .env("WEIR_LOCAL_STATE_DIR", local.join(name))
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, into) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = into.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Member { name, child, log }
    }

    /// How many times it started a shard.
    fn takeovers(&self) -> usize {
        self.log.lock().unwrap().matches(" runs shard ").count()
    }

    fn wait_for_takeovers(&self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.takeovers() < n {
            assert!(
                Instant::now() < deadline,
                "member {} took over no {n} shard(s) in {secs} s:\n{}",
                self.name,
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> String {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for_exit(&mut self.child, Duration::from_secs(60), self.name);
        let log = self.log.lock().unwrap().clone();
        assert!(status.success(), "member {} ended badly ({status}):\n{log}", self.name);
        log
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn members_join_die_and_leave_while_the_output_stays_exact() {
    let broker = Broker::shared();
    let server = s3::S3Server::shared();
    broker.create_topic("d-in", PARTITIONS);
    broker.create_topic("d-out", PARTITIONS);
    let url = s3::S3Server::url(&format!("distributed-{}", std::process::id()));
    let local = tempfile::tempdir().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (b, stop) = (broker.bootstrap.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut produced = 0;
            while produced < RECORDS || !stop.load(Ordering::Relaxed) {
                broker::produce_to(&b, "d-in", &input_by_key(produced..produced + 5_000, PARTITIONS));
                produced += 5_000;
                std::thread::sleep(Duration::from_millis(200));
            }
            produced
        })
    };

    let mut a = Member::start("A", broker, server, &url, local.path());
    let mut b = Member::start("B", broker, server, &url, local.path());
    a.wait_for_takeovers(1, 60);
    b.wait_for_takeovers(1, 60);
    std::thread::sleep(Duration::from_secs(2));
    // A dies: its shards move once the group misses it (session timeout).
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let a_before = a.takeovers();
    let mut c = Member::start("C", broker, server, &url, local.path());
    c.wait_for_takeovers(1, 60);
    // B leaves gracefully: final checkpoints, then its shards move.
    let b_log = b.terminate();
    let after_b = c.takeovers();
    c.wait_for_takeovers(after_b.max(PARTITIONS as usize / 2), 60);
    // A comes back: the group moves shards to it (C gives them up gracefully).
    let mut a2 = Member::start("A", broker, server, &url, local.path());
    a2.wait_for_takeovers(1, 60);
    std::thread::sleep(Duration::from_secs(2));

    stop.store(true, Ordering::Relaxed);
    let records = feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = output(broker, "d-out");
    while (out.len() as u64) < records {
        assert!(
            Instant::now() < deadline,
            "the members wrote {} of {records} records in 120 s\nA:\n{}\nC:\n{}",
            out.len(),
            a2.log.lock().unwrap(),
            c.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_secs(1));
        out = output(broker, "d-out");
    }
    let a_log = a2.terminate();
    let c_log = c.terminate();
    let out = output(broker, "d-out");
    let (lost, duplicated) = compare(&expected(records), &out);
    let takeovers = a_before
        + b_log.matches(" runs shard ").count()
        + c_log.matches(" runs shard ").count()
        + a_log.matches(" runs shard ").count();
    let restored = [&b_log, &c_log, &a_log]
        .iter()
        .map(|l| l.matches("restored checkpoint Some(").count())
        .sum::<usize>();
    // "... restored checkpoint Some(n) in N ms": the takeover times.
    let mut takeover_ms: Vec<u64> = [&b_log, &c_log, &a_log]
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains(" runs shard "))
        .filter_map(|l| l.rsplit(" in ").next()?.strip_suffix(" ms")?.parse().ok())
        .collect();
    takeover_ms.sort_unstable();
    publish_summary(
        "distributed",
        &format!(
            "distributed: kafka-count members A, B, C over {PARTITIONS} shards (A SIGKILLed and back, C joined, B left) \
             takeovers={takeovers} (from a checkpoint: {restored}; state restored in {takeover_ms:?} ms) lost={lost} \
             duplicated={duplicated} store=s3 output={}",
            out.len()
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(out.len() as u64, records);
    assert!(restored >= 3, "shards moved with their state: {restored}");
}
