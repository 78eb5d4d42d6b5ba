//! Exactly-once through Kafka under SIGKILL: `weir run kafka-count` (Kafka ->
//! key_by -> running count in RocksDB -> exactly-once Kafka sink,
//! checkpoints every 150 ms) runs as a child process while the input grows,
//! each restart at another parallelism (2, 3, 1, 4 in turn: the job rescales
//! from whatever checkpoint the kill left),
//! and is killed at random moments at least 20 times, at least twice between
//! "checkpoint complete" and "transaction committed" (failpoint
//! `kafka-before-commit`). A final bounded run drains the rest. A
//! read_committed dump of the output must equal a failure-free run's.
//!
//! The same job with its checkpoints on the S3 test server runs at
//! parallelism 2, 3 and 1, each killed after a checkpoint, then at 4 to the
//! end (issue 18's rescale proof on an object store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;
#[path = "support/s3.rs"]
mod s3;

use broker::Broker;
use common::{
    compare, follow, kill_after, publish_summary, wait_for_checkpoints, wait_for_exit, KillRng, RunEnd, WEIR,
};
use kafka_data::{expected, input, output};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// At least this many input records.
const RECORDS: u64 = 200_000;

/// The parallelism of each restart in turn: every restart rescales.
const PARALLELISM: [usize; 4] = [2, 3, 1, 4];

fn start(broker: &Broker, dir: &Path, bounded: bool, failpoints: &str, parallelism: usize) -> Child {
    let mut cmd = Command::new(WEIR);
    cmd.args(["run", "kafka-count", "--parallelism", &parallelism.to_string()]);
    cmd.args(["--checkpoint-interval-ms", "150", "--input", "in", "--output", "out"])
        .args(["--brokers", &broker.bootstrap])
        .arg("--checkpoint-dir")
        .arg(dir)
        .env("WEIR_FAILPOINTS", failpoints)
        .env("WEIR_LOG", std::env::var("KILL_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if bounded {
        cmd.arg("--bounded");
    }
    cmd.spawn().unwrap()
}

#[test]
fn sigkill_through_kafka_loses_and_duplicates_nothing() {
    let broker = Broker::shared();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let dir = tempfile::tempdir().unwrap();

    // The input grows while the job is being killed (at least RECORDS, and
    // until the kills are done, so that there is always output to commit).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = feed(broker, "in", stop.clone());

    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let (mut kills, mut before_commit, mut after_commit, mut in_restore, mut runs) = (0, 0, 0, 0, 0);
    while kills < 20 || before_commit < 2 || after_commit < 1 || in_restore < 1 {
        runs += 1;
        assert!(
            runs < 150,
            "not enough kills in 150 runs (kills={kills} before_commit={before_commit} after_commit={after_commit} \
             in_restore={in_restore})"
        );
        // Every third run may die between "checkpoint complete" and the
        // commit; some right after a commit (before the next checkpoint says
        // so) or while restoring; the others at a random moment.
        let failpoints = match runs % 12 {
            0 | 3 | 6 | 9 => "kafka-before-commit=kill(50)",
            4 => "kafka-after-commit=kill",
            8 => "restored=kill",
            _ => "snapshot-async=sleep(30)",
        };
        let mut child = start(
            broker,
            dir.path(),
            false,
            failpoints,
            PARALLELISM[runs % PARALLELISM.len()],
        );
        // A run armed to die at a commit gets as long as it needs to reach
        // one (a loaded CI machine may take seconds to start and fetch); the
        // others are killed at a random moment.
        let wait = if runs % 3 == 0 || runs % 12 == 4 || runs % 12 == 8 {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(500 + rng.below(1200))
        };
        match kill_after(&mut child, wait, || {}) {
            RunEnd::Killed { by_failpoint: true } => {
                kills += 1;
                match runs % 12 {
                    4 => after_commit += 1,
                    8 => in_restore += 1,
                    _ => before_commit += 1,
                }
            }
            RunEnd::Exited(status) => {
                let mut log = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
                panic!("the continuous job ended by itself ({status}):\n{log}");
            }
            RunEnd::Killed { by_failpoint: false } => {
                if std::env::var("KILL_DEBUG").is_ok() && before_commit >= 1 && runs % 3 == 0 {
                    let mut log = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
                    eprintln!("--- run {runs} log:\n{log}");
                }
                kills += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let records = feeder.join().unwrap();

    let mut last = start(broker, dir.path(), true, "", 2);
    let status = wait_for_exit(&mut last, Duration::from_secs(120), "the final bounded run");
    let mut log = String::new();
    std::io::Read::read_to_string(last.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "final bounded run failed: {status}\n{log}");

    let out = output(broker, "out");
    let (lost, duplicated) = compare(&expected(records), &out);
    publish_summary(
        "kafka_kill",
        &format!("kafka: broker={} kills={kills} lost={lost} duplicated={duplicated}, each restart at another parallelism {PARALLELISM:?} (between checkpoint and commit={before_commit} after a commit={after_commit} in restore={in_restore} runs={runs} output={} seed={seed})", broker::broker_name(), out.len()),
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(out.len() as u64, records);
}

/// Feeds `in` with 10 000 records every 300 ms until `stop` (at least
/// `RECORDS`); returns how many.
fn feed(
    broker: &Broker,
    topic: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let b = broker.bootstrap.clone();
    std::thread::spawn(move || {
        let mut produced = 0;
        while produced < RECORDS || !stop.load(std::sync::atomic::Ordering::Relaxed) {
            broker::produce_to(&b, topic, &input(produced..produced + 10_000, 4));
            produced += 10_000;
            std::thread::sleep(Duration::from_millis(300));
        }
        produced
    })
}

#[test]
fn kafka_count_rescales_2_3_1_4_under_kills_with_checkpoints_on_s3() {
    let broker = Broker::shared();
    let server = s3::S3Server::shared();
    broker.create_topic("s3-in", 4);
    broker.create_topic("s3-out", 4);
    let url = s3::S3Server::url(&format!("kafka-rescale-{}", std::process::id()));
    let local = tempfile::tempdir().unwrap();
    let run = |parallelism: usize, bounded: bool| {
        let mut cmd = Command::new(WEIR);
        cmd.args(["run", "kafka-count", "--parallelism", &parallelism.to_string()])
            .args([
                "--checkpoint-interval-ms",
                "150",
                "--input",
                "s3-in",
                "--output",
                "s3-out",
            ])
            .args(["--brokers", &broker.bootstrap, "--checkpoint-dir", &url])
            .envs(server.env())
            .env("WEIR_LOCAL_STATE_DIR", local.path())
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if bounded {
            cmd.arg("--bounded");
        }
        cmd.spawn().unwrap()
    };

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = feed(broker, "s3-in", stop.clone());
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let (mut kills, mut rescaled) = (0, 0);
    for parallelism in [2usize, 3, 1] {
        let mut child = run(parallelism, false);
        let (_, complete, log) = follow(&mut child);
        // A checkpoint of this run first, so that the next run rescales from
        // one of this parallelism; then a kill at a random moment.
        wait_for_checkpoints(&complete, 1, &format!("kafka-count at parallelism {parallelism}"));
        match kill_after(&mut child, Duration::from_millis(rng.below(800)), || {}) {
            RunEnd::Killed { .. } => kills += 1,
            RunEnd::Exited(status) => panic!(
                "kafka-count at parallelism {parallelism} ended by itself ({status}):\n{}",
                log.join().unwrap()
            ),
        }
        rescaled += usize::from(log.join().unwrap().contains("redistributed by key group"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let records = feeder.join().unwrap();

    let mut last = run(4, true);
    let (_, _, log) = follow(&mut last);
    let status = wait_for_exit(
        &mut last,
        Duration::from_secs(180),
        "the final bounded run at parallelism 4",
    );
    let log = log.join().unwrap();
    assert!(status.success(), "the final bounded run failed: {status}\n{log}");
    rescaled += usize::from(log.contains("redistributed by key group"));

    // `weir offsets` reads the positions from the S3 store: every
    // partition of the input at its end.
    let report = Command::new(WEIR)
        .args([
            "offsets",
            &url,
            "--job",
            "kafka-count",
            "--brokers",
            &broker.bootstrap,
            "--json",
        ])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let rows = report["offsets"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "one row per input partition: {report}");
    let next: i64 = rows.iter().map(|r| r["next_offset"].as_i64().unwrap()).sum();
    let lag: i64 = rows.iter().map(|r| r["lag"].as_i64().unwrap()).sum();
    assert_eq!((next as u64, lag), (records, 0), "{report}");

    let out = output(broker, "s3-out");
    let (lost, duplicated) = compare(&expected(records), &out);
    publish_summary(
        "kafka_rescale_s3",
        &format!(
            "rescale: kafka-count 2->3->1->4 kills={kills} lost={lost} duplicated={duplicated} store=s3 \
             (runs that rescaled keyed state: {rescaled}, output={} seed={seed})",
            out.len()
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(out.len() as u64, records);
    assert!(rescaled >= 3, "every restart rescales keyed state ({rescaled} did)");
}
